"""Helpers for the real-switch interop tests: Kamailio (Debian 12) and SIPp as the phones.

Kamailio runs the recipe in docs/recipes/kamailio/ as it is, with only the listen address, the
gateway (the SIPp callee), the file paths and the ocs ports changed, so the recipe is what the
tests prove. Every process is started here and stopped by its own pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from support import ROOT, free_udp_port

RECIPES = ROOT / "docs" / "recipes"
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
IN_CI = os.environ.get("CI") == "true"


def find(command: str, *fallbacks: str) -> str | None:
    found = shutil.which(command)
    if found:
        return found
    return next((path for path in fallbacks if Path(path).is_file()), None)


KAMAILIO = find("kamailio", "/usr/sbin/kamailio")
SIPP = find("sipp", "/usr/bin/sipp")


def substitute(text: str, replacements: dict[str, str]) -> str:
    """The recipe with its deployment values replaced; each must occur (a recipe that changed
    under the test would otherwise be tested with its production values)."""
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"the recipe no longer contains {old!r}")
        text = text.replace(old, new)
    return text


class Process:
    """A subprocess with its output in a file; stopped by its pid."""

    def __init__(self, args: list[str], log: Path, cwd: Path) -> None:
        self.args = args
        self.log = log
        self._handle = log.open("w")
        self.proc = subprocess.Popen(args, stdout=self._handle, stderr=subprocess.STDOUT, cwd=cwd)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._handle.close()


def critical_lines(process: Process) -> list[str]:
    """Kamailio's CRITICAL log lines, less cdp's "Bye Bye" at every normal shutdown."""
    return [
        line
        for line in process.output().splitlines()
        if "CRITICAL" in line and "Bye Bye from C Diameter Peer" not in line
    ]


def sip_probe(port: int, timeout: float = 0.5) -> str | None:
    """Send an OPTIONS to 127.0.0.1:port; the status line of the answer, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        local = sock.getsockname()[1]
        message = (
            f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-probe-{time.monotonic_ns()}\r\n"
            f"From: <sip:probe@127.0.0.1:{local}>;tag=probe\r\n"
            f"To: <sip:probe@127.0.0.1:{port}>\r\n"
            f"Call-ID: probe-{time.monotonic_ns()}@127.0.0.1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        sock.settimeout(timeout)
        sock.sendto(message.encode(), ("127.0.0.1", port))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    return data.split(b"\r\n", 1)[0].decode(errors="replace")


def start_kamailio(config: str, workdir: Path, sip_port: int, name: str = "kamailio") -> Process:
    """Kamailio in the foreground with ``config``; returns once it answers SIP."""
    assert KAMAILIO is not None
    cfg = workdir / f"{name}.cfg"
    cfg.write_text(config)
    check = subprocess.run(
        [KAMAILIO, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, f"kamailio refuses the configuration:\n{check.stderr}"
    process = Process(
        [
            KAMAILIO,
            "-f",
            str(cfg),
            "-DD",  # foreground, children forked
            "-E",  # log to stderr
            "-Y",
            str(workdir),
            "-P",
            str(workdir / f"{name}.pid"),
            "-m",
            "64",
            "-M",
            "8",
        ],
        workdir / f"{name}.log",
        workdir,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise AssertionError(f"kamailio exited:\n{process.output()}")
        if sip_probe(sip_port) is not None:
            return process
        time.sleep(0.2)
    process.stop()
    raise AssertionError(f"kamailio did not answer SIP within 20 s:\n{process.output()}")


def start_uas(scenario: str, port: int, workdir: Path) -> Process:
    """A SIPp callee on 127.0.0.1:port running ``scenario`` for every incoming call."""
    assert SIPP is not None
    process = Process(
        [
            SIPP,
            "-sf",
            str(SIPP_DIR / scenario),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(workdir / f"uas-{port}-errors.log"),
        ],
        workdir / f"uas-{port}.log",
        workdir,
    )
    time.sleep(0.3)
    if process.proc.poll() is not None:
        raise AssertionError(f"sipp (callee) exited:\n{process.output()}")
    return process


@dataclass(frozen=True)
class SipMessage:
    at: datetime
    sent: bool
    first_line: str
    text: str


@dataclass(frozen=True)
class CallResult:
    returncode: int
    output: str
    messages: list[SipMessage]

    def first(self, prefix: str, *, sent: bool | None = None) -> SipMessage:
        for message in self.messages:
            if message.first_line.startswith(prefix) and (sent is None or message.sent is sent):
                return message
        raise AssertionError(f"no {prefix!r} in the call:\n{self.describe()}")

    def describe(self) -> str:
        return (
            "\n".join(
                f"{m.at.time()} {'>' if m.sent else '<'} {m.first_line}" for m in self.messages
            )
            + f"\n--- sipp:\n{self.output[-3000:]}"
        )


_BLOCK = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)$", re.MULTILINE)


def parse_trace(text: str) -> list[SipMessage]:
    """SIPp's -trace_msg file: one block per message, headed by its time."""
    messages = []
    parts = _BLOCK.split(text)
    for stamp, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) < 2:
            continue
        messages.append(
            SipMessage(
                at=datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f"),
                sent="sent" in lines[0],
                first_line=lines[1],
                text="\n".join(lines[1:]),
            )
        )
    return messages


def call(
    scenario: str,
    *,
    proxy_port: int,
    caller: str,
    workdir: Path,
    name: str,
    talk_ms: int = 1000,
    callee: str = "15557654321",
    timeout: float = 90,
    replacements: dict[str, str] | None = None,
    calls: int = 1,
) -> CallResult:
    """``calls`` calls (1: one) from a SIPp caller through the proxy, all started at once;
    waits for them to end. Call-IDs are ``{name}-1@ocs.test``, ``{name}-2@ocs.test``..."""
    assert SIPP is not None
    path = SIPP_DIR / scenario
    if replacements:
        path = workdir / f"{name}-{scenario}"
        path.write_text(substitute((SIPP_DIR / scenario).read_text(), replacements))
    trace = workdir / f"{name}-messages.log"
    done = subprocess.run(
        [
            SIPP,
            f"127.0.0.1:{proxy_port}",
            "-sf",
            str(path),
            "-s",
            callee,
            "-key",
            "caller",
            caller,
            "-cid_str",
            f"{name}-%u@ocs.test",
            "-d",
            str(talk_ms),
            "-i",
            "127.0.0.1",
            "-p",
            str(free_udp_port()),
            "-m",
            str(calls),
            "-l",
            str(calls),
            "-r",
            str(calls),
            "-nostdin",
            "-trace_msg",
            "-message_file",
            str(trace),
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
        ],
        capture_output=True,
        text=True,
        timeout=timeout + 30,
        check=False,
        cwd=workdir,
    )
    messages = parse_trace(trace.read_text(errors="replace")) if trace.exists() else []
    return CallResult(done.returncode, done.stdout + done.stderr, messages)
