"""Helpers for the integration tests: run ``ocs`` and ``ocsd`` as an operator would."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ocs.radius import codec

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


def midday_zone(now: datetime) -> str:
    """A fixed-offset zone ("Etc/GMT-3" is UTC+3) where ``now`` falls between 10:00 and 15:00:
    a test that runs a day-bound scenario through the CLI (which reads the clock itself) cannot
    cross a midnight there, whenever the suite runs."""
    offset = (12 - now.astimezone(UTC).hour) % 24  # hours to add to UTC to reach about noon
    if offset > 14:
        offset -= 24  # Etc zones span UTC-12 .. UTC+14
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/UTC"


def real_clock_env() -> dict[str, str]:
    """The environment without libfaketime, for peers whose clock does not matter to a test and
    that do not run under it: redis-server's allocator calls clock_gettime from inside
    libfaketime and the server dies at start. ``make test-dates`` runs the suite under
    faketime; PostgreSQL and ocsd keep the faked clock, which is what those runs are about."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKETIME", "DONT_FAKE"))}
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "faketime" not in p]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def ocs_env(dsn: str | None, **extra: str) -> dict[str, str]:
    """The environment of an ``ocs``/``ocsd`` subprocess. ``daemon.workers`` defaults to
    "auto" (one process per core); the suite runs each daemon as one process, except where a
    test asks for workers (``OCS_DAEMON__WORKERS="2"``, ``"auto"``): those test the default.
    A daemon with workers starts its own redis-server, which dies under libfaketime, so such a
    daemon runs on the real clock when the suite runs under faketime (no date test uses one)."""
    workers = extra.get("OCS_DAEMON__WORKERS", "1")
    base = real_clock_env() if workers != "1" else os.environ
    env = {k: v for k, v in base.items() if not k.startswith("OCS_")}
    if dsn is not None:
        env["OCS_DATABASE__DSN"] = dsn
    env["OCS_DAEMON__WORKERS"] = "1"
    env.update(extra)
    return env


def run_ocs(
    *args: str, dsn: str | None, cwd: Path | None = None, timeout: float = 60, **env: str
) -> Result:
    """Run the ``ocs`` CLI as a user would, against ``dsn``."""
    done = subprocess.run(
        [str(BIN / "ocs"), *args],
        capture_output=True,
        text=True,
        env=ocs_env(dsn, **env),
        cwd=cwd or ROOT,
        timeout=timeout,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


class DaemonProcess:
    """``ocsd`` as a subprocess; stderr goes to a file that the test can read."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "ocsd"), *args],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )

    def output(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"ocsd exited ({self.proc.returncode}) before {text!r}:\n{out}"
                )
            time.sleep(0.05)
        raise AssertionError(f"ocsd did not log {text!r} within {timeout} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_handle.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_handle.close()


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _port_slice() -> range | None:
    """This process's ports: outside the kernel's ephemeral range, one slice per xdist worker.
    None when the ephemeral range leaves too little outside it (then port 0's pick)."""
    low, high = _ephemeral_range()
    if low - 10_000 >= 4_000:
        first, end = 10_000, low
    elif 65_536 - (high + 1) >= 4_000:
        first, end = high + 1, 65_536
    else:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    index = int(worker) % count if worker.isdigit() else 0
    size = (end - first) // count
    start = first + index * size
    return range(start, start + size)


_SLICE = _port_slice()
# A random start: two pytest runs with the same slice (test-dates runs three at once, each
# without xdist) begin far apart, and the bind check below skips what the other one holds.
_NEXT = [_SLICE[int.from_bytes(os.urandom(4), "big") % len(_SLICE)]] if _SLICE else [0]


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for TCP and UDP (``kind`` is the one the caller will bind; both
    are checked), for a server a test starts.

    Not the kernel's pick for port 0: it hands out ports of its ephemeral range to every
    socket bound to port 0 and every outgoing connection, so such a port, free when picked,
    could be taken before the daemon bound it (seen: the daemon's own metrics listener on
    port 0 got the port the test had picked for its Diameter listener). These come from
    below that range (``_port_slice``: each xdist worker its own slice), in turn, so this
    process hands a port out again only after its slice of about 10,000 wraps."""
    if _SLICE is None:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
    for _ in range(len(_SLICE)):
        port = _NEXT[0]
        _NEXT[0] = port + 1 if port + 1 < _SLICE.stop else _SLICE.start
        if _bindable(port):
            return port
    raise RuntimeError(f"no free loopback port in {_SLICE}")


def free_udp_port() -> int:
    return free_port(socket.SOCK_DGRAM)


def free_tcp_port() -> int:
    return free_port(socket.SOCK_STREAM)


class ApiProcess:
    """``ocs api`` as a subprocess on a free loopback port, against ``dsn``."""

    def __init__(self, dsn: str, log: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log_handle = log.open("w")
        self.proc = subprocess.Popen(
            [str(BIN / "ocs"), "api", "--listen", f"127.0.0.1:{self.port}"],
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            env=ocs_env(dsn, **env),
            cwd=ROOT,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"ocs api exited ({self.proc.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"ocs api not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log_handle.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log_handle.close()


def create_token(dsn: str, operator: str, *extra: str) -> str:
    """A new API token for ``operator`` through the CLI, as an operator would get one."""
    made = run_ocs("api-token", "create", operator, *extra, dsn=dsn)
    assert made.code == 0, made.err
    return made.out.strip().splitlines()[0]


def exchange(
    port: int, packet: bytes, sock: socket.socket | None = None, timeout_s: float = 3.0
) -> codec.Packet | None:
    """Send a RADIUS request to 127.0.0.1:``port`` from ``sock`` (a new socket of its own
    when None) and read its answer (None if none comes within ``timeout_s``)."""
    if sock is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as own:
            return exchange(port, packet, own, timeout_s)
    sock.settimeout(timeout_s)
    sock.sendto(packet, ("127.0.0.1", port))
    try:
        data, _ = sock.recvfrom(4096)
    except TimeoutError:
        return None
    return codec.parse_packet(data)


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples on a metrics endpoint, those with exactly ``labels``."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match is None:
            continue
        found = ",".join(sorted((match.group(1) or "").split(","))) if match.group(1) else ""
        if not labels or found == want:
            total += float(match.group(2))
    return total
