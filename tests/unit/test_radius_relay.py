"""Accounting relayed to the worker that admitted its session (ocs.radius.relay)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from ocs.radius.relay import RelayedListener, WorkerRelay, admission_owner, call_owner


@pytest.mark.parametrize(
    ("admission", "owner"),
    [
        ("w0|radius-auth|127.0.0.1|5000|7|00ff", 0),
        ("w12|radius-call|127.0.0.1|abc", 12),
        ("radius-auth|127.0.0.1|5000|7|00ff", None),  # one process: no tag
        ("w|x", None),
        ("wx|x", None),
        ("w1", None),
        ("w123456|x", None),
        ("", None),
    ],
)
def test_the_owner_an_admission_names(admission: str, owner: int | None) -> None:
    assert admission_owner(admission) == owner


def test_a_worker_outside_the_count_is_refused(tmp_path: Path) -> None:
    for index, count in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="worker"):
            WorkerRelay(str(tmp_path), index, count)


async def test_a_request_goes_to_its_worker_and_the_answer_comes_back(tmp_path: Path) -> None:
    seen: list[tuple[str, bool, bytes, tuple[str, int]]] = []

    def owner_front(listener: RelayedListener, data: bytes, addr: tuple[str, int], _t: float):
        seen.append((listener.kind, listener.tls, data, addr))
        assert listener.transport is not None
        listener.transport.sendto(b"answer to " + data, addr)  # as the front replies

    here, there = WorkerRelay(str(tmp_path), 0, 2), WorkerRelay(str(tmp_path), 1, 2)
    here.start(lambda *_: pytest.fail("nothing is relayed to worker 0"))
    there.start(owner_front)
    try:
        assert stat.S_IMODE(os.stat(there.path).st_mode) == 0o600
        reply = await here.forward(1, b"\x04\x07packet", ("192.0.2.1", 41000), tls=True)
        assert reply == b"answer to \x04\x07packet"
        assert seen == [("acct", True, b"\x04\x07packet", ("192.0.2.1", 41000))]
        reply6 = await here.forward(1, b"v6", ("2001:db8::1", 1813), tls=False)
        assert reply6 == b"answer to v6"
        assert (here.relayed_out, there.relayed_in) == (2, 2)
    finally:
        here.close()
        there.close()
    assert not os.path.exists(there.path)  # noqa: ASYNC240  # a test, after the loop work


async def test_a_worker_not_there_is_a_connection_error(tmp_path: Path) -> None:
    """Gone or not started: the caller handles the request itself."""
    here = WorkerRelay(str(tmp_path), 0, 3)
    here.start(lambda *_: None)
    try:
        with pytest.raises(ConnectionError):
            await here.forward(2, b"packet", ("127.0.0.1", 1), tls=False)
        with pytest.raises(ConnectionError):
            await here.forward(0, b"packet", ("127.0.0.1", 1), tls=False)  # itself
        with pytest.raises(ConnectionError):
            await here.forward(3, b"packet", ("127.0.0.1", 1), tls=False)  # beyond the count
        assert here.unreachable == 1
    finally:
        here.close()


async def test_a_worker_that_does_not_answer_gives_none_in_time(tmp_path: Path) -> None:
    here = WorkerRelay(str(tmp_path), 0, 2, timeout_s=0.2)
    silent = WorkerRelay(str(tmp_path), 1, 2)
    here.start(lambda *_: None)
    silent.start(lambda *_: None)  # takes it, never answers (as while its database is away)
    try:
        started = asyncio.get_running_loop().time()
        assert await here.forward(1, b"packet", ("127.0.0.1", 1), tls=False) is None
        assert 0.15 < asyncio.get_running_loop().time() - started < 2.0
        assert here.timeouts == 1
    finally:
        here.close()
        silent.close()


async def test_garbage_on_the_socket_is_ignored(tmp_path: Path) -> None:
    import socket

    got: list[bytes] = []
    there = WorkerRelay(str(tmp_path), 1, 2)
    there.start(lambda _l, data, _a, _t: got.append(data))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
            # Empty, truncated heads, an unknown kind, a host that is no ASCII.
            for junk in (
                b"",
                b"Q",
                b"Q\x00\x00",
                b"A\x00",
                b"Z" * 40,
                b"Q" + b"\x00" * 7 + b"\x01\xff",
            ):
                other.sendto(junk, there.path)
        await asyncio.sleep(0.1)
        assert got == []
        # Still serving.
        here = WorkerRelay(str(tmp_path), 0, 2, timeout_s=1.0)
        here.start(lambda *_: None)
        try:
            await here.forward(1, b"ok", ("127.0.0.1", 9), tls=False)
        finally:
            here.close()
        assert got == [b"ok"]
    finally:
        there.close()


async def test_an_access_request_is_relayed_as_one(tmp_path: Path) -> None:
    kinds: list[str] = []

    def owner_front(listener: RelayedListener, data: bytes, addr: tuple[str, int], _t: float):
        kinds.append(listener.kind)
        listener.transport.sendto(b"accept", addr)

    here, there = WorkerRelay(str(tmp_path), 0, 2), WorkerRelay(str(tmp_path), 1, 2)
    here.start(lambda *_: None)
    there.start(owner_front)
    try:
        got = await here.forward(1, b"x", ("127.0.0.1", 5), tls=False, kind="auth")
        assert got == b"accept"
        assert kinds == ["auth"]
    finally:
        here.close()
        there.close()


def test_a_call_has_one_worker() -> None:
    """The same call key, the same worker (its Access-Requests and its accounting); calls
    spread over the workers."""
    assert call_owner(b"conf-1", 4) == call_owner(b"conf-1", 4)
    owners = {call_owner(f"conf-{n}".encode(), 4) for n in range(64)}
    assert owners == {0, 1, 2, 3}
    assert all(call_owner(f"c{n}".encode(), 1) == 0 for n in range(10))
