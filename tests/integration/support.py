"""Helpers for the integration tests: run ``ocs`` and ``ocsd`` as an operator would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str


def ocs_env(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCS_")}
    if dsn is not None:
        env["OCS_DATABASE__DSN"] = dsn
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
