"""sd_notify over a unix datagram socket: filesystem path and abstract namespace."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path

from ocs.ops import notify


def _receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_path_socket_receives_the_message(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with _receiver(path) as sock:
        assert notify.sd_notify("READY=1\nSTATUS=ok", {"NOTIFY_SOCKET": path})
        assert sock.recv(4096) == b"READY=1\nSTATUS=ok"


def test_abstract_socket_receives_the_message() -> None:
    name = f"ocs-test-{uuid.uuid4().hex}"
    with _receiver("\0" + name) as sock:
        assert notify.sd_notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_without_a_manager_nothing_is_sent_and_nothing_raises(tmp_path: Path) -> None:
    assert not notify.sd_notify("READY=1", {})
    assert not notify.sd_notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notify.sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval_s({}) is None
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "x"}) is None
    assert notify.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    own = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert notify.watchdog_interval_s(own) == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert notify.watchdog_interval_s(other) is None  # meant for another process


async def test_watchdog_pings_come_from_the_loop(tmp_path: Path) -> None:
    path = str(tmp_path / "wd.sock")
    with _receiver(path) as sock:
        sock.setblocking(False)
        task = asyncio.create_task(notify.watchdog_pings(0.01, {"NOTIFY_SOCKET": path}))
        await asyncio.sleep(0.1)
        task.cancel()
        pings = []
        while True:
            try:
                pings.append(sock.recv(64))
            except BlockingIOError:
                break
    assert len(pings) >= 3 and set(pings) == {b"WATCHDOG=1"}
