"""systemd's notify protocol (sd_notify(3)) without libsystemd: one datagram to $NOTIFY_SOCKET.

Rules of this file:
- Sending never blocks and never raises: a full or missing socket loses the message (systemd
  then sees a missed READY or watchdog ping, which is what a stuck daemon would show anyway).
- ``$NOTIFY_SOCKET`` is a filesystem path or, starting with ``@``, an abstract-namespace name.
- The watchdog is pinged from the event loop, so a blocked loop stops the pings and systemd
  restarts the service (``WatchdogSec=``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("ocs.notify")

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def notify_address(env: Mapping[str, str] | None = None) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET`` (abstract names get their leading NUL)."""
    path = (os.environ if env is None else env).get(NOTIFY_SOCKET_ENV, "")
    if path.startswith("@"):
        return "\0" + path[1:]
    if path.startswith("/"):
        return path
    return None  # unset, or a kind we do not speak (vsock:...)


def sd_notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``); True if it was sent, False without a manager."""
    address = notify_address(env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        log.debug("sd_notify failed message=%s error=%s", message.split("\n", 1)[0], exc)
        return False
    return True


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None when not asked."""
    env = os.environ if env is None else env
    raw = env.get(WATCHDOG_USEC_ENV)
    pid = env.get(WATCHDOG_PID_ENV)
    if not raw or (pid and pid != str(os.getpid())):
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


async def watchdog_pings(interval_s: float, env: Mapping[str, str] | None = None) -> None:
    """Send WATCHDOG=1 every ``interval_s`` until cancelled (run it as a task on the loop)."""
    while True:
        sd_notify("WATCHDOG=1", env)
        await asyncio.sleep(interval_s)
