"""Side-by-side RADIUS benchmark: ocsd against the FreeRADIUS baseline, in one run, on this machine.

Started by ``bench/run_radius_bench.sh`` (see there for usage). Configurations, in this order:

1. ``ocsd-1p``: one ocsd process pinned to CPU 0, generator pinned to CPU 1. Its own config in
   a temporary directory (embedded PostgreSQL there, RADIUS on free loopback ports, client
   127.0.0.1/testing123, metrics on port 0, log level warning) and the baseline's data set
   (``bench/seed_accounts.py``: 10,000 accounts 4178 + 7 digits).
2. ``freeradius``: ``../shared/baseline/freeradius-baseline/start.sh`` (rlm_cache + rlm_sql,
   threaded) on both cores, as operators run it; generator pinned to CPU 1.
3. ``freeradius-cpu0``: the same FreeRADIUS with all its threads pinned to CPU 0 (a per-core
   comparison with ``ocsd-1p``).
4. ``ocsd-auto``: ocsd as ``make run`` starts it (``daemon.workers`` unset: "auto", one worker
   per core, SO_REUSEPORT, holds shared through the local redis-server the supervisor starts;
   ``--workers N`` writes ``daemon.workers = N`` instead, named ``ocsd-Nw``); daemon on both
   cores, generator unpinned. Its CPU is every process of the daemon (supervisor, workers,
   redis-server); its metrics come from the supervisor's one endpoint.
   Or ``external``: an ocsd someone else started (``--external-port``), measured as it is.

Per configuration: a warm-up pass over every user before each run (so a 60 s cache TTL, the same
in both servers, never makes a measured run cold), then ``--runs`` saturation runs
(unpaced, at each ``--inflight`` window: 64 and 256 by default; the configuration's saturation is
its best window's median, since a closed window too small for a server measures its latency
rather than its capacity) and ``--runs`` paced runs at half the median ocsd-1p saturation
rate. Before the paced runs an ocsd started here is restarted (and its sidecar settled): the
generator sends no accounting, so every Access-Accept of the saturation runs leaves its
admission held for ``grant.ring_timeout_s`` (180 s by default), over a million per process, and
the paced runs would measure that burst's aftermath rather than the paced rate
(``--no-settle``: straight away, no restart; an external ocsd: its held admissions are waited
for, up to 60 s). Each run records the generator's report, the server's CPU
(``/proc/PID/stat`` of the server and its children), the whole machine's busy CPU
(``/proc/stat``: what other work was running), kernel UDP drop counters (``/proc/net/snmp``)
and, for ocsd, the deltas of ``ocs_dropped_packets_total`` and ``ocs_requests_total`` from
``/metrics`` plus any log lines at warning or above. Everything started is stopped by pid at
the end (and the baseline's ``stop.sh`` is run), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
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
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
OCSD = VENV_BIN / "ocsd"
LOAD = HERE / "radius_load.py"
SEED = HERE / "seed_accounts.py"
BASELINE = REPO.parent / "shared" / "baseline" / "freeradius-baseline"
USER_PATTERN = "4178%07d"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SECRET = "testing123"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- /proc helpers


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpus: set[int] | None) -> list[str]:
    """A ``taskset`` prefix pinning a command to these CPUs (nothing when unpinned)."""
    return ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(root: int) -> list[int]:
    """root and every process below it (from /proc/*/stat parent pids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid_alive(pid):
            out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (all threads) of these processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total


def cpu_split(before: dict[int, int], after: dict[int, int], wall: float) -> list[float]:
    """Each process's CPU between two ``cpu_ticks_by_pid`` readings, in % of one core, busiest
    first, the ones under 1 % left out: how evenly the kernel spread the load over workers."""
    shares = [100.0 * (after[p] - before.get(p, 0)) / CLK_TCK / wall for p in after]
    return sorted((round(x, 1) for x in shares if x >= 1.0), reverse=True)


def cpu_ticks_by_pid(pids: list[int]) -> dict[int, int]:
    return {pid: cpu_ticks([pid]) for pid in pids}


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) ticks over all CPUs from /proc/stat."""
    cpu = machine_ticks()
    return cpu["busy"], cpu["total"]


def machine_ticks() -> dict[str, int]:
    """/proc/stat totals over all CPUs: processes (user + nice + system), interrupts (irq +
    softirq: loopback UDP is largely delivered there, outside any process), steal (the
    hypervisor gave the time to another VM), busy and total."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    procs, interrupts, steal = v[0] + v[1] + v[2], v[5] + v[6], v[7]
    return {
        "procs": procs,
        "interrupts": interrupts,
        "steal": steal,
        "busy": procs + interrupts + steal,
        "total": sum(v[:8]),
    }


def udp_counters() -> dict[str, int]:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    for header, values in itertools.pairwise(lines):
        if header[0] == "Udp:" and values[0] == "Udp:" and not values[1].isalpha():
            return {k: int(v) for k, v in zip(header[1:], values[1:], strict=True)}
    return {}


def udp_port_bound(port: int) -> bool:
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local = line.split()[1]
                if int(local.rsplit(":", 1)[1], 16) == port:
                    return True
    return False


def listening_tcp_ports(pids: list[int]) -> list[int]:
    inodes: set[str] = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and parts[9] in inodes:
                    ports.append(int(parts[1].rsplit(":", 1)[1], 16))
    return sorted(set(ports))


def set_affinity(pids: list[int], cpus: set[int]) -> None:
    """Pin every thread of these processes (what ``taskset -a -p`` does)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task.name), cpus)


def stop_pid(pid: int, name: str, grace_s: float = 20.0, sig: int = signal.SIGTERM) -> None:
    if not pid_alive(pid):
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        log(f"{name} (pid {pid}) did not stop within {grace_s:.0f} s: SIGKILL")
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def sum_samples(scrapes: list[dict[str, float]]) -> dict[str, float]:
    """Samples summed over several /metrics endpoints (one per worker process)."""
    out: dict[str, float] = {}
    for one in scrapes:
        for key, value in one.items():
            out[key] = out.get(key, 0.0) + value
    return out


def held_admissions(server: Server) -> float:
    """``ocs_reservations`` of the server: one process's, or the sum of the per-worker series a
    supervisor's endpoint shows (``worker`` label)."""
    return sum(
        value
        for port in server.metrics_ports
        for key, value in scrape_one(port).items()
        if key == "ocs_reservations" or key.startswith("ocs_reservations{")
    )


def scrape_one(port: int) -> dict[str, float]:
    """The ocs_* (and python_gc_collections) samples of one /metrics endpoint."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or not m.group(1).startswith(("ocs_", "python_gc_collections")):
            continue
        key = m.group(1) + (m.group(2) or "")
        with contextlib.suppress(ValueError):
            out[key] = out.get(key, 0.0) + float(m.group(3))
    return out


def metric_delta(
    before: dict[str, float], after: dict[str, float], prefix: str
) -> dict[str, float]:
    keys = {k for k in after if k.startswith(prefix)}
    delta = {k: after[k] - before.get(k, 0.0) for k in keys}
    return {k: v for k, v in sorted(delta.items()) if v}


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    port: int
    root_pid: int | None  # the process we started (or the external one)
    gen_cpus: set[int] | None  # generator's CPUs (None: unpinned)
    server_cpus: str
    log_path: Path | None = None
    log_offset: int = 0
    metrics_ports: list[int] = field(default_factory=list)
    extra_pids: list[int] = field(default_factory=list)
    config: Path | None = None  # an ocsd started here: its configuration, for a restart
    pin: set[int] | None = None  # and the CPUs it was started on (None: unpinned)

    def pids(self) -> list[int]:
        pids = descendants(self.root_pid) if self.root_pid else []
        for pid in self.extra_pids:
            if pid_alive(pid) and pid not in pids:
                pids.extend(descendants(pid))
        return pids

    def server_pids(self) -> list[int]:
        """The server processes, without a database that runs as a child (embedded PostgreSQL
        is started by ocsd; its CPU is not the daemon's)."""
        out = []
        for pid in self.pids():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if not comm.startswith(("postgres", "postmaster", "pg_ctl", "initdb")):
                out.append(pid)
        return out

    def new_log_lines(self) -> list[str]:
        if self.log_path is None or not self.log_path.exists():
            return []
        with self.log_path.open("rb") as handle:
            handle.seek(self.log_offset)
            data = handle.read()
            self.log_offset = handle.tell()
        return data.decode("utf-8", "replace").splitlines()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="ocs-radius-bench-"))
        os.chmod(self.work, 0o755)  # the embedded PostgreSQL runs as another user when root
        self.out = Path(args.out) if args.out else self.work
        self.out.mkdir(parents=True, exist_ok=True)
        self.started: list[tuple[str, int]] = []  # (name, pid) we started, stopped in reverse
        self.pg_dirs: list[Path] = []
        self.fr_env: dict[str, str] | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self.users = ["--user-pattern", USER_PATTERN, "--user-range", f"1:{args.accounts}"]

    # ----------------------------------------------------------------- generator runs

    def generate(self, server: Server, extra: list[str]) -> dict[str, Any]:
        cmd = [str(PYTHON), str(LOAD), "--port", str(server.port), "--secret", SECRET, "--json"]
        cmd += ["--sockets", str(self.args.sockets)]
        cmd += self.users + extra
        result = subprocess.run(
            pinned(server.gen_cpus) + cmd, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"load generator failed: {result.stderr.strip()}")
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    def warm(self, server: Server) -> dict[str, Any]:
        """One pass over every user (round robin), so the measured run starts on a warm cache."""
        return self.generate(
            server,
            ["--seconds", "20", "--max-requests", str(self.args.accounts), "--inflight", "32"],
        )

    def measured(self, server: Server, kind: str, rate: float, window: int = 0) -> dict[str, Any]:
        warm = self.warm(server)
        server.new_log_lines()  # the warm-up's log lines are not this run's
        pids = server.server_pids()
        per_port_before = [scrape_one(port) for port in server.metrics_ports]
        metrics_before = sum_samples(per_port_before)
        udp_before = udp_counters()
        m0 = machine_ticks()
        by_pid0 = cpu_ticks_by_pid(pids)
        cpu0 = sum(by_pid0.values())
        t0 = time.monotonic()
        extra = ["--seconds", str(self.args.seconds)]
        if rate:
            # Open loop: a window large enough that a stall in the server does not stop the
            # schedule (no coordinated omission); the latency then shows the queueing.
            extra += ["--rate", f"{rate:.0f}", "--inflight", str(self.args.paced_inflight)]
        else:
            extra += ["--inflight", str(window or self.args.inflight[0])]
        report = self.generate(server, extra)
        wall = time.monotonic() - t0
        by_pid1 = cpu_ticks_by_pid(pids)
        cpu1 = sum(by_pid1.values())
        m1 = machine_ticks()
        udp_after = udp_counters()
        per_port_after = [scrape_one(port) for port in server.metrics_ports]
        metrics_after = sum_samples(per_port_after)
        n_cpus = os.cpu_count() or 1
        server_pct = 100.0 * (cpu1 - cpu0) / CLK_TCK / wall
        span = max(1, m1["total"] - m0["total"])
        machine = {k: 100.0 * n_cpus * (m1[k] - m0[k]) / span for k in m0 if k != "total"}
        report.update(
            kind=kind,
            warmup={k: warm[k] for k in ("sent", "answered", "timeouts", "throughput")},
            server_cpu_pct=server_pct,
            server_cpu_split=cpu_split(by_pid0, by_pid1, wall),
            machine_busy_pct=machine["busy"],
            interrupts_pct=machine["interrupts"],
            steal_pct=machine["steal"],
            # Process CPU neither the server nor the generator used: other work on the machine.
            other_busy_pct=max(0.0, machine["procs"] - server_pct - report["cpu_pct"]),
            udp_counter_deltas={
                k: udp_after[k] - udp_before.get(k, 0)
                for k in ("InErrors", "RcvbufErrors", "SndbufErrors", "NoPorts")
                if k in udp_after and udp_after[k] - udp_before.get(k, 0)
            },
            dropped=metric_delta(metrics_before, metrics_after, "ocs_dropped_packets_total"),
            requests=metric_delta(metrics_before, metrics_after, "ocs_requests_total"),
            counters={
                k: v
                for k, v in metric_delta(metrics_before, metrics_after, "ocs_").items()
                if "_total" in k and "_bucket" not in k
            },
            gc_collections=metric_delta(metrics_before, metrics_after, "python_gc_collections"),
            reservations=metrics_after.get("ocs_reservations"),
            # Requests answered by each process (SO_REUSEPORT spreads by source port).
            answered_per_process=[
                sum(metric_delta(b, a, "ocs_requests_total").values())
                for b, a in zip(per_port_before, per_port_after, strict=True)
            ],
            log_problems=[
                line
                for line in server.new_log_lines()
                if re.search(r"warn|error|critical|exception|traceback|drop", line, re.I)
            ][:50],
        )
        lat = report["latency_ms"]
        log(
            f"  {server.name:16} {kind:10} {report['throughput']:8.0f}/s  "
            f"p50 {lat['p50']:6.2f}  p99 {lat['p99']:6.2f}  max {lat['max']:7.1f} ms  "
            f"timeouts {report['timeouts']}  server CPU {server_pct:5.1f} %  "
            f"gen CPU {report['cpu_pct']:4.1f} %  other procs {report['other_busy_pct']:4.0f} %  "
            f"irq {machine['interrupts']:3.0f} %  steal {machine['steal']:3.0f} %"
            + (f"  drops {report['dropped']}" if report["dropped"] else "")
            + (f"  udp {report['udp_counter_deltas']}" if report["udp_counter_deltas"] else "")
        )
        return report

    def measure(self, server: Server, half_rate: float | None) -> dict[str, Any]:
        log(
            f"== {server.name}: daemon CPUs {server.server_cpus}, generator CPUs "
            f"{sorted(server.gen_cpus) if server.gen_cpus else 'any'}, port {server.port}"
        )
        # A closed window caps a server at window / latency: one too small for the server
        # measures its latency, not its capacity. Each window is measured; the server's
        # saturation is the window where its median is highest.
        by_window = {
            window: [
                self.measured(server, f"saturation w{window}", 0, window)
                for _ in range(self.args.runs)
            ]
            for window in self.args.inflight
        }
        best = max(
            by_window, key=lambda w: statistics.median(r["throughput"] for r in by_window[w])
        )
        saturation = by_window[best]
        sat = statistics.median(r["throughput"] for r in saturation)
        rate = half_rate if half_rate else sat / 2
        if server.metrics_ports and not self.args.no_settle:
            if server.config is not None:
                log(
                    f"  {held_admissions(server):.0f} admissions held by the saturation runs "
                    f"(grant.ring_timeout_s, no accounting claims them): restarting "
                    f"{server.name} for the paced runs"
                )
                self.restart_ocsd(server)
            else:
                self.settle_admissions(server)
        half = [self.measured(server, f"rate {rate:.0f}", rate) for _ in range(self.args.runs)]
        extra = []
        for fixed in self.args.extra_rate:
            extra += [
                self.measured(server, f"rate {fixed:.0f}", fixed) for _ in range(self.args.runs)
            ]
        result = {
            "name": server.name,
            "daemon_cpus": server.server_cpus,
            "generator_cpus": sorted(server.gen_cpus) if server.gen_cpus else "any",
            "saturation_runs": saturation,
            "saturation_window": best,
            "saturation_by_window": {
                str(w): statistics.median(r["throughput"] for r in runs)
                for w, runs in by_window.items()
            },
            "half_rate": rate,
            "half_rate_runs": half,
            "extra_rate_runs": extra,
        }
        self.results[server.name] = result
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2))
        return result

    # ----------------------------------------------------------------- ocsd

    def ocsd_config(
        self, name: str, auth: int, acct: int, workers: int | str | None, *, spread: bool = False
    ) -> Path:
        d = self.work / name
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)
        pg = self.work / "ocs-pg"  # shared by every ocsd configuration: seeded once
        daemon = f'lock_file = "{d}/ocsd.lock"\n'
        if workers is None:
            daemon += "workers = 1\n"  # one process (ocsd-1p)
        elif workers != "auto":
            daemon += f"workers = {workers}\n"  # else the default: auto
        text = f"""# Written by bench/radius_bench.py for one benchmark run.
[daemon]
{daemon}
[log]
level = "warning"

[database]
embedded_dir = "{pg}"

[metrics]
listen = "127.0.0.1:0"

[radius]
enabled = true
auth_listen = ["127.0.0.1:{auth}"]
acct_listen = ["127.0.0.1:{acct}"]
{"reuse_port = true" if workers else ""}
{"spread_access_requests = true" if spread else ""}

[[radius.clients]]
name = "bench"
address = "127.0.0.1"
secret = "{SECRET}"
"""
        path = d / "ocs.toml"
        path.write_text(text)
        if pg not in self.pg_dirs:
            self.pg_dirs.append(pg)
        return path

    def config_ok(self, path: Path) -> tuple[bool, str]:
        r = subprocess.run(
            [str(OCSD), "--config", str(path), "--check-config"],
            capture_output=True, text=True, check=False, cwd=self.work,
        )  # fmt: skip
        return r.returncode == 0, (r.stdout + r.stderr).strip()

    def seed(self, config: Path) -> None:
        n = self.args.accounts
        log(f"seeding {n} accounts ({USER_PATTERN}) into the embedded PostgreSQL")
        r = subprocess.run(
            [str(PYTHON), str(SEED), "--config", str(config), "--accounts", str(n)],
            capture_output=True, text=True, check=False, cwd=self.work,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"seeding failed:\n{r.stdout}{r.stderr}")
        log("  " + r.stdout.strip())

    def start_ocsd(self, name: str, config: Path, cpus: set[int] | None, port: int) -> Server:
        log_path = config.parent / "ocsd.log"
        handle = log_path.open("wb")
        proc = subprocess.Popen(
            [*pinned(cpus), str(OCSD), "--config", str(config)],
            stdout=handle, stderr=subprocess.STDOUT, cwd=self.work,
            start_new_session=True,
        )  # fmt: skip
        handle.close()
        self.started.append((name, proc.pid))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}"
                )
            if udp_port_bound(port):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{name} not listening on {port} after 120 s")
        deadline = time.monotonic() + 120
        while not listening_tcp_ports([proc.pid]) and time.monotonic() < deadline:
            time.sleep(0.2)  # the metrics endpoint: a supervisor opens it once all workers are
        time.sleep(0.5)
        server = Server(
            name=name, port=port, root_pid=proc.pid, gen_cpus=None,
            server_cpus=",".join(map(str, sorted(cpus))) if cpus else "any",
            log_path=log_path, config=config, pin=cpus,
        )  # fmt: skip
        # One process: its own endpoint; a supervisor: its endpoint aggregates the workers'.
        server.metrics_ports = listening_tcp_ports([proc.pid]) or listening_tcp_ports(
            server.server_pids()
        )
        log(
            f"{name} pid {proc.pid} ready on 127.0.0.1:{port} (processes {server.server_pids()}, "
            f"metrics ports {server.metrics_ports})"
        )
        self.settle(server, time.time())
        return server

    def settle(self, server: Server, ready_at: float, quiet_s: float = 12.0) -> None:
        """Wait until every process's sidecar has stopped applying account changes.

        Its polls re-read the accounts changed within a watermark margin before the last poll
        (the seed, just before start) and apply them on the event loop, which stalls the
        daemon for seconds with 10,000 accounts: that must not fall into a measured run. Settled
        = a poll succeeded after start and nothing was applied for ``quiet_s`` (two poll
        intervals at the default 5 s, plus slack).
        """
        deadline = time.monotonic() + 90
        last: list[float] | None = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            now = [scrape_one(port) for port in server.metrics_ports]
            polled = all(
                m.get("ocs_loader_last_success_timestamp_seconds", ready_at + 1) > ready_at
                for m in now
            )
            applied = [m.get("ocs_loader_changes_applied_total", 0.0) for m in now]
            if applied != last:
                last, quiet_since = applied, time.monotonic()
            elif polled and time.monotonic() - quiet_since >= quiet_s:
                log(f"  sidecar settled ({sum(applied):.0f} account changes applied since start)")
                return
            time.sleep(1.0)
        log("  sidecar did not settle within 90 s (measuring anyway)")

    def settle_admissions(self, server: Server, limit_s: float = 60.0) -> None:
        """Wait until the admissions the saturation runs left held have expired (an ocsd not
        started here, which cannot be restarted).

        Every Access-Accept holds its grant's cost until accounting Start claims it, or for
        grant.ring_timeout_s (180 s by default); the generator sends no accounting. The
        saturation runs leave over a million held admissions per process, a burst's aftermath,
        not the steady state of the paced rate. ``--no-settle`` measures straight after instead.
        """
        started = time.monotonic()
        while time.monotonic() - started < limit_s:
            held = held_admissions(server)
            if held < 1_000:
                log(f"  held admissions expired after {time.monotonic() - started:.0f} s")
                return
            time.sleep(1.0)
        log(f"  admissions still held after {limit_s:.0f} s (measuring anyway)")

    def restart_ocsd(self, server: Server) -> None:
        """Stop ``server`` (an ocsd started here) and start it again on the same configuration,
        port and CPUs; ``server`` then describes the new process."""
        assert server.config is not None
        self.stop_ocsd(server)
        fresh = self.start_ocsd(server.name, server.config, server.pin, server.port)
        server.root_pid, server.log_path = fresh.root_pid, fresh.log_path
        server.log_offset, server.metrics_ports = fresh.log_offset, fresh.metrics_ports

    def stop_ocsd(self, server: Server) -> None:
        assert server.root_pid is not None
        stop_pid(server.root_pid, server.name)
        for pid in server.pids():  # workers left behind by a killed parent
            stop_pid(pid, f"{server.name} child", grace_s=5)
        self.started = [(n, p) for n, p in self.started if p != server.root_pid]

    def stop_embedded_postgres(self) -> None:
        """The embedded server stops with the last ocsd; if one was killed, stop it here."""
        for pg in self.pg_dirs:
            pid_file = pg / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError):
                pid = int(pid_file.read_text().splitlines()[0])
                if pid_alive(pid):
                    log(f"stopping the embedded PostgreSQL (pid {pid}) of {pg}")
                    stop_pid(pid, "embedded PostgreSQL", sig=signal.SIGINT)

    # ----------------------------------------------------------------- FreeRADIUS

    def start_freeradius(self) -> Server:
        # The baseline needs the server and its PostgreSQL driver (a separate package).
        if shutil.which("freeradius") is None or not any(
            Path(d, "rlm_sql_postgresql.so").exists()
            for d in ("/usr/lib/freeradius", "/usr/lib/x86_64-linux-gnu/freeradius")
        ):
            if os.geteuid() == 0 and not self.args.no_install:
                log("installing freeradius freeradius-utils freeradius-postgresql postgresql")
                env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
                subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
                subprocess.run(
                    ["apt-get", "install", "-y", "-qq", "freeradius", "freeradius-utils",
                     "freeradius-postgresql", "postgresql"],
                    check=True, env=env,
                )  # fmt: skip
            else:
                raise RuntimeError(
                    "freeradius is not installed (Debian: freeradius "
                    "freeradius-utils freeradius-postgresql postgresql)"
                )
        auth, acct, pg = free_port(), free_port(), free_port(socket.SOCK_STREAM)
        env = dict(
            os.environ,
            FR_AUTH_PORT=str(auth), FR_ACCT_PORT=str(acct), PG_PORT=str(pg),
            N_ACCOUNTS=str(self.args.accounts), FR_SECRET=SECRET,
        )  # fmt: skip
        env.pop("RUN_DIR", None)
        self.fr_env = env
        log(f"starting the FreeRADIUS baseline on 127.0.0.1:{auth} (PostgreSQL on {pg})")
        r = subprocess.run(
            [str(BASELINE / "start.sh")], env=env, capture_output=True, text=True, check=False
        )
        if r.returncode != 0:
            raise RuntimeError(f"baseline start.sh failed:\n{r.stdout}{r.stderr}")
        for line in r.stdout.splitlines():
            log("  " + line)
        run_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ocs-fr-baseline-{auth}"
        pid = int((run_dir / "radiusd.pid").read_text())
        check = subprocess.run(
            [str(BASELINE / "check.sh"), "127.0.0.1", str(auth), SECRET],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        log("  check.sh: " + (check.stdout.strip().splitlines() or ["?"])[-1])
        return Server(
            name="freeradius", port=auth, root_pid=pid, gen_cpus=None, server_cpus="0,1",
            log_path=run_dir / "radiusd.log",
        )  # fmt: skip

    def stop_freeradius(self) -> None:
        if self.fr_env is None:
            return
        log("stopping the FreeRADIUS baseline (stop.sh)")
        subprocess.run([str(BASELINE / "stop.sh")], env=self.fr_env, check=False)
        self.fr_env = None

    # ----------------------------------------------------------------- the whole run

    def check_ocsd_ocs1(self, server: Server) -> None:
        r = subprocess.run(
            [str(BASELINE / "check.sh"), "127.0.0.1", str(server.port), SECRET],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        log("  check.sh: " + (r.stdout.strip().splitlines() or ["?"])[-1])

    def run(self) -> None:
        a = self.args
        log(f"work dir {self.work}; results in {self.out}")
        selftest = subprocess.run(
            [str(PYTHON), str(LOAD), "--selftest"], capture_output=True, text=True, check=False
        )
        log("generator " + selftest.stdout.strip())
        if selftest.returncode != 0:
            raise RuntimeError(f"generator selftest failed: {selftest.stdout}{selftest.stderr}")
        if a.wait_quiet:
            wait_quiet(a.wait_quiet)
        self.results["_meta"] = meta(self.args.accounts)
        half_rate: float | None = a.half_rate or None
        n_cpus = os.cpu_count() or 1
        pinned = n_cpus >= 2
        seeded = False

        if a.external_port:
            server = Server(
                name="external", port=a.external_port, root_pid=None, gen_cpus=None,
                server_cpus="as started", extra_pids=a.external_pid,
            )  # fmt: skip
            server.metrics_ports = a.external_metrics_port or listening_tcp_ports(
                server.server_pids()
            )
            self.measure(server, half_rate)

        if not a.skip_ocsd:
            auth, acct = free_port(), free_port()
            config = self.ocsd_config("ocsd-1p", auth, acct, None)
            ok, msg = self.config_ok(config)
            if not ok:
                raise RuntimeError(f"ocsd config rejected: {msg}")
            self.seed(config)
            seeded = True
            server = self.start_ocsd("ocsd-1p", config, {0} if pinned else None, auth)
            server.gen_cpus = {1} if pinned else None
            self.check_ocsd_ocs1(server)
            try:
                result = self.measure(server, half_rate)
                if a.profile:
                    self.profile(server)
            finally:
                self.stop_ocsd(server)
            half_rate = half_rate or result["half_rate"]

        if not a.skip_freeradius:
            server = self.start_freeradius()
            try:
                server.gen_cpus = {1} if pinned else None
                set_affinity(server.pids(), set(range(n_cpus)))
                self.measure(server, half_rate)
                if pinned and not a.skip_freeradius_cpu0:
                    set_affinity(server.pids(), {0})
                    server.name, server.server_cpus = "freeradius-cpu0", "0"
                    self.measure(server, half_rate)
            finally:
                self.stop_freeradius()

        if not a.skip_workers and not a.skip_ocsd:
            workers = a.workers if a.workers == "auto" else int(a.workers)
            name = "ocsd-auto" if workers == "auto" else f"ocsd-{workers}w"
            auth, acct = free_port(), free_port()
            config = self.ocsd_config(name, auth, acct, workers)
            ok, msg = self.config_ok(config)
            if not ok:
                log(
                    f"{name} skipped: this ocsd does not accept daemon.workers "
                    f"({msg.splitlines()[-1] if msg else 'no message'})"
                )
                self.results[name] = {"skipped": msg}
            else:
                if not seeded:
                    self.seed(config)
                variants = [(name, config, auth)]
                if a.also_id_spread:
                    # The same workers with Access-Requests spread by Identifier instead of
                    # by the kernel's hash of source address and port (radius/spread.py).
                    sauth, sacct = free_port(), free_port()
                    spread = self.ocsd_config(f"{name}-id", sauth, sacct, workers, spread=True)
                    variants.append((f"{name}-id", spread, sauth))
                for vname, vconfig, vauth in variants:
                    server = self.start_ocsd(vname, vconfig, None, vauth)
                    try:
                        self.measure(server, half_rate)
                    finally:
                        self.stop_ocsd(server)
        (self.out / "results.json").write_text(json.dumps(self.results, indent=2))
        print(summary(self.results))
        (self.out / "summary.txt").write_text(summary(self.results) + "\n")
        log(f"results: {self.out / 'results.json'}  summary: {self.out / 'summary.txt'}")

    def profile(self, server: Server) -> None:
        """py-spy over one more saturation run of ocsd (if py-spy is installed)."""
        spy = VENV_BIN / "py-spy"
        if not spy.exists():
            log("profile skipped: no .venv/bin/py-spy (.venv/bin/pip install py-spy)")
            return
        self.warm(server)
        raw = self.out / f"{server.name}-pyspy.txt"
        pid = server.server_pids()[0]
        spy_proc = subprocess.Popen(
            [*pinned(server.gen_cpus), str(spy), "record", "-d", str(int(self.args.seconds)),
             "-r", "100", "-p", str(pid), "-f", "raw", "-o", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.started.append(("py-spy", spy_proc.pid))
        report = self.generate(server, ["--seconds", str(self.args.seconds + 1)])
        spy_proc.wait(timeout=60)
        self.started = [(n, p) for n, p in self.started if p != spy_proc.pid]
        text = fold_profile(raw)
        (self.out / f"{server.name}-profile.txt").write_text(text)
        log(f"profile ({report['throughput']:.0f}/s under py-spy at 100 Hz):\n{text}")

    def cleanup(self) -> None:
        for name, pid in reversed(self.started):
            stop_pid(pid, name)
            for child in descendants(pid):
                stop_pid(child, f"{name} child", grace_s=5)
        self.started.clear()
        self.stop_freeradius()
        self.stop_embedded_postgres()
        if not self.args.keep:
            for path in self.work.iterdir():
                if path.name in ("results.json", "summary.txt") or path.name.endswith(
                    ("-pyspy.txt", "-profile.txt")
                ):
                    continue
                shutil.rmtree(path, ignore_errors=True)
                with contextlib.suppress(OSError):
                    path.unlink()


def wait_quiet(limit_s: float, busy_pct: float = 30.0) -> None:
    """Wait (at most limit_s) until the machine is mostly idle: other work skews every figure."""
    deadline = time.monotonic() + limit_s
    while True:
        busy0, total0 = machine_busy_ticks()
        time.sleep(5)
        busy1, total1 = machine_busy_ticks()
        busy = 100.0 * (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)
        if busy < busy_pct:
            log(f"machine quiet: {busy:.0f} % busy (of {100 * (os.cpu_count() or 1)} %)")
            return
        if time.monotonic() > deadline:
            log(f"machine still {busy:.0f} % busy after {limit_s:.0f} s: measuring anyway")
            return
        log(f"machine {busy:.0f} % busy with other work: waiting")


def meta(accounts: int) -> dict[str, Any]:
    """What was measured: the commit, uncommitted source changes, the accounts the load
    generator asks for, machine and its load."""

    def git(*cmd: str) -> str:
        r = subprocess.run(
            ["git", "-C", str(REPO), *cmd], capture_output=True, text=True, check=False
        )
        return r.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "accounts": accounts,
        "uncommitted": git("status", "--short", "src").splitlines(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def fold_profile(raw: Path, top: int = 25) -> str:
    """Self and inclusive shares of the main thread's functions, from py-spy's raw output."""
    self_count: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "daemon_main" not in stack and "ocsd" not in stack.split(";", 1)[0]:
            continue  # other threads (metrics HTTP server, executor): mostly waiting
        count = int(n)
        total += count
        frames = stack.split(";")
        self_count[frames[-1]] = self_count.get(frames[-1], 0) + count
        for frame in set(frames):
            incl[frame] = incl.get(frame, 0) + count
    if not total:
        return "no samples"
    lines = [f"main thread: {total} samples", "self:"]
    for frame, count in sorted(self_count.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    lines.append("inclusive:")
    for frame, count in sorted(incl.items(), key=lambda kv: -kv[1])[: top + 8]:
        lines.append(f"  {100 * count / total:5.1f} %  {frame}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- summary


def _med(runs: list[dict[str, Any]], key: str, sub: str | None = None) -> float:
    values = [r[key][sub] if sub else r[key] for r in runs]
    return statistics.median(values) if values else float("nan")


def summary(results: dict[str, dict[str, Any]]) -> str:
    sat_head = (
        f"{'configuration':17} {'daemon':>6} {'window':>6} {'max req/s':>10} {'(min-max)':>13} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'srv CPU':>8} {'µs CPU/req':>10} "
        f"{'gen CPU':>8} {'others':>7} {'timeouts':>8} {'drops':>6}"
    )
    lat_head = (
        f"{'configuration':17} {'target/s':>9} {'achieved':>9} {'p50 ms':>7} {'p90 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'srv CPU':>8} {'others':>7} {'timeouts':>8}"
    )
    sat_lines = [sat_head, "-" * len(sat_head)]
    lat_lines = [lat_head, "-" * len(lat_head)]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        if "skipped" in r:
            why = r["skipped"].splitlines()[-1] if r["skipped"] else ""
            sat_lines.append(f"{name:17} skipped: {why}")
            continue
        sat = r["saturation_runs"]
        tps = [x["throughput"] for x in sat]
        cost = [x["server_cpu_pct"] * 1e4 / x["throughput"] for x in sat if x["throughput"]]
        sat_lines.append(
            f"{name:17} {r['daemon_cpus']:>6} {r.get('saturation_window', ''):>6} "
            f"{statistics.median(tps):10.0f} "
            f"{f'{min(tps):.0f}-{max(tps):.0f}':>13} "
            f"{_med(sat, 'latency_ms', 'p50'):7.2f} {_med(sat, 'latency_ms', 'p99'):7.2f} "
            f"{_med(sat, 'latency_ms', 'max'):7.1f} {_med(sat, 'server_cpu_pct'):7.0f}% "
            f"{statistics.median(cost) if cost else float('nan'):10.1f} "
            f"{_med(sat, 'cpu_pct'):7.0f}% {_med(sat, 'other_busy_pct'):6.0f}% "
            f"{sum(x['timeouts'] for x in sat):8d} "
            f"{sum(sum(x['dropped'].values()) for x in sat):6.0f}"
        )
        groups: dict[float, list[dict[str, Any]]] = {}
        for x in r["half_rate_runs"] + r.get("extra_rate_runs", []):
            groups.setdefault(x["rate_target"], []).append(x)
        for target, runs in groups.items():
            lat_lines.append(
                f"{name:17} {target:9.0f} {_med(runs, 'throughput'):9.0f} "
                f"{_med(runs, 'latency_ms', 'p50'):7.2f} {_med(runs, 'latency_ms', 'p90'):7.2f} "
                f"{_med(runs, 'latency_ms', 'p99'):7.2f} {_med(runs, 'latency_ms', 'max'):7.1f} "
                f"{_med(runs, 'server_cpu_pct'):7.0f}% {_med(runs, 'other_busy_pct'):6.0f}% "
                f"{sum(x['timeouts'] for x in runs):8d}"
            )
    meta = results.get("_meta", {})
    dirty = " + uncommitted src changes" if meta.get("uncommitted") else ""
    lines = [
        f"RADIUS Access-Request benchmark, warm cache, {meta.get('accounts', 0):,} accounts "
        f"({USER_PATTERN % 1} up); commit "
        f"{meta.get('commit', '?')}{dirty}, {meta.get('started', '')}.",
        "Medians of the runs; CPU in % of one core; 'others': process CPU used by other work "
        "on the machine meanwhile (noise).",
        "",
        "Saturation (unpaced; each configuration at the window where it answered most):",
        *sat_lines,
        *[
            f"  {name}: "
            + ", ".join(
                f"window {w} {v:.0f}/s" for w, v in r.get("saturation_by_window", {}).items()
            )
            for name, r in results.items()
            if not name.startswith("_") and len(r.get("saturation_by_window", {})) > 1
        ],
        "",
        "Each saturation run: req/s, CPU µs per request, and each server process's CPU in % of "
        "one core (with workers: how evenly the kernel's hash spread the generator's sockets):",
        *[
            f"  {name}: "
            + "; ".join(
                f"{x['throughput']:.0f}/s {x['server_cpu_pct'] * 1e4 / x['throughput']:.1f} µs "
                f"[{' '.join(f'{c:.0f}' for c in x.get('server_cpu_split', []))}]"
                for x in r["saturation_runs"]
                if x["throughput"]
            )
            for name, r in results.items()
            if not name.startswith("_") and "saturation_runs" in r
        ],
        "",
        "Latency at a paced rate (open loop; 'half' = half the ocsd-1p saturation):",
        *lat_lines,
    ]

    def tput(r: dict[str, Any]) -> float:
        return statistics.median(x["throughput"] for x in r["saturation_runs"])

    def cost(r: dict[str, Any]) -> float:
        return statistics.median(
            x["server_cpu_pct"] * 1e4 / x["throughput"] for x in r["saturation_runs"]
        )

    bases = [
        (label, results[key])
        for key, label in (("freeradius", "both cores"), ("freeradius-cpu0", "one core"))
        if "saturation_runs" in results.get(key, {})
    ]
    if bases:
        lines += ["", "Ratios (throughput: higher is better for ocsd; CPU per request: lower):"]
    for name, r in results.items():
        if name.startswith(("freeradius", "_")) or "saturation_runs" not in r:
            continue
        for label, base in bases:
            lines.append(
                f"  {name} / freeradius ({label}): throughput {tput(r) / tput(base):.2f}, "
                f"CPU per request {cost(r) / cost(base):.2f}"
            )
    problems = []
    for name, r in results.items():
        for x in (
            r.get("saturation_runs", [])
            + r.get("half_rate_runs", [])
            + r.get("extra_rate_runs", [])
        ):
            if x["dropped"] or x["udp_counter_deltas"] or x["log_problems"] or x["timeouts"]:
                problems.append(
                    f"{name} {x['kind']}: timeouts {x['timeouts']} drops {x['dropped']} "
                    f"udp {x['udp_counter_deltas']} log {x['log_problems'][:3]}"
                )
    if problems:
        lines += ["", "Problems seen:"]
        lines += ["  " + p for p in problems]
    return "\n".join(lines)


def _windows(text: str) -> list[int]:
    """``--inflight``: windows as "64,256", each a whole number of at least 1."""
    try:
        windows = [int(w) for w in text.split(",")]
    except ValueError:
        windows = []
    if not windows or min(windows) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: windows are whole numbers >= 1, as 64,256")
    return windows


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ocsd vs FreeRADIUS RADIUS benchmark")
    p.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of one run")
    p.add_argument(
        "--inflight",
        type=_windows,
        default=[64, 256],
        help="windows at saturation, comma-separated (each measured; the best counts)",
    )
    p.add_argument(
        "--paced-inflight", type=int, default=2048, help="window cap of the paced (latency) runs"
    )
    p.add_argument("--accounts", type=int, default=10_000)
    p.add_argument(
        "--sockets",
        type=int,
        default=16,
        help="generator source ports (SO_REUSEPORT spreads workers by them)",
    )
    p.add_argument(
        "--half-rate",
        type=float,
        default=0.0,
        help="rate for the latency runs (default: half the ocsd-1p saturation)",
    )
    p.add_argument(
        "--extra-rate",
        type=float,
        action="append",
        default=[],
        help="also measure latency at this paced rate (repeatable), e.g. 7500",
    )
    p.add_argument(
        "--workers",
        default="auto",
        help='daemon.workers for the workers run: "auto" (the default, as make run) or N',
    )
    p.add_argument(
        "--no-settle",
        action="store_true",
        help="paced runs straight after saturation, while its held admissions expire",
    )
    p.add_argument("--skip-ocsd", action="store_true")
    p.add_argument("--skip-freeradius", action="store_true")
    p.add_argument("--skip-freeradius-cpu0", action="store_true")
    p.add_argument("--skip-workers", action="store_true")
    p.add_argument(
        "--also-id-spread",
        action="store_true",
        help="also measure the workers with radius.spread_access_requests = true",
    )
    p.add_argument("--external-port", type=int, help="also measure an ocsd already running here")
    p.add_argument(
        "--external-pid", type=int, action="append", default=[], help="its pid(s), for its CPU use"
    )
    p.add_argument(
        "--external-metrics-port",
        type=int,
        action="append",
        default=[],
        help="its /metrics port(s)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy profile of ocsd-1p")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=300.0,
        help="first wait up to this many seconds for the machine to be < 30 %% busy (0: no)",
    )
    p.add_argument("--no-install", action="store_true", help="do not apt-get install FreeRADIUS")
    p.add_argument("--out", help="directory for results.json and summary.txt")
    p.add_argument("--keep", action="store_true", help="keep the work dir (configs, logs)")
    args = p.parse_args()  # fmt: skip
    if not 1 <= args.runs <= 20 or not 1 <= args.seconds <= 120:
        p.error("--runs 1..20 and --seconds 1..120")
    return args


def main() -> int:
    args = parse_args()
    if not OCSD.exists():
        print("no .venv/bin/ocsd: run `make venv` first", file=sys.stderr)
        return 2
    bench = Bench(args)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        bench.run()
    except KeyboardInterrupt:
        log("interrupted: stopping what was started")
        return 130
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
