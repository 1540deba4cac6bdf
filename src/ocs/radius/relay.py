"""Accounting reaches the worker that admitted its session.

With several workers, an Access-Request is admitted by one worker, which holds the grant's
credit as a pending reservation named by the Class of its Access-Accept; the session's Start,
which the NAS sends to the accounting port, claims that reservation. The kernel chooses the
accounting port's worker by a hash of addresses and ports, independently of the
authentication port's: half the Starts (with two workers) reached a worker that held nothing
for them, so the session ran with no hold, and the admission's hold went at the ring timeout.
A prepaid account could then start a second call on credit the first one was spending.

So the admitting worker puts its index in the admission's name (``w<index>|...``, echoed in
Class), and a worker that receives, and has authenticated, an Accounting-Request naming
another worker's admission relays it there: over a Unix datagram socket per worker in a
directory only the daemon's user can enter (``<lock_file>.relay/``: the supervisor makes it
and removes it), the
request goes with the client's address, and the answer comes back to be sent from where the
request came in (UDP or RadSec), and kept for retransmissions. The owning worker handles it
as its own (client, secrets, duplicates, ledger), so a session's Start, Interim-Updates and
Stop all run where its hold is.

A client whose profile echoes no Class (FreeSWITCH's mod_xml_radius) names its call in both
its Access-Requests and its accounting (h323-conf-id): both go to worker ``crc32(call key) mod
N``, relayed there from whichever worker the kernel chose. Repeated attempts of one call then
meet in one worker too.

Failures: a worker that cannot be reached (gone, not started) means the request is handled
where it came in, as before; one that does not answer within ``timeout_s`` gets no answer
sent (the NAS retransmits; the ledger knows repeats at any age).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any

log = logging.getLogger("ocs.radius")

_REQUEST, _ANSWER = b"Q", b"A"
# Request: kind, correlation, flags, client port, client host length; host; packet.
_TLS, _ACCT = 1, 2  # flags: came in over RadSec; on an accounting listener
_REQUEST_HEAD = struct.Struct("!cIBHB")
_ANSWER_HEAD = struct.Struct("!cI")
MAX_WORKERS = 1024


def admission_owner(admission: str) -> int | None:
    """The worker index an admission's name carries (``w<index>|...``), else None."""
    if not admission.startswith("w"):
        return None
    head, sep, _ = admission.partition("|")
    if not sep or not head[1:].isdigit() or len(head) > 5:
        return None
    return int(head[1:])


def call_owner(call: bytes, count: int) -> int:
    """The worker of a call named by a client that echoes no Class: by a hash of its call
    key, the same for its Access-Requests and its accounting."""
    return zlib.crc32(call) % count


def socket_path(directory: str, index: int) -> str:
    return os.path.join(directory, f"w{index}")


class RelayedListener:
    """The listener a relayed request arrived on, as the front sees it (``Listener``): its
    replies go back to the worker that relayed it."""

    relayed = True

    def __init__(
        self, kind: str, tls: bool, relay: WorkerRelay, origin: str, correlation: int
    ) -> None:
        self.kind = kind
        self.tls = tls
        self._relay = relay
        self._origin = origin
        self._correlation = correlation

    @property
    def transport(self) -> RelayedListener:
        return self

    def sendto(self, data: bytes, addr: Any = None, /) -> None:
        self._relay.answer(self._origin, self._correlation, data)


Deliver = Callable[[RelayedListener, bytes, tuple[str, int], float], None]


class WorkerRelay:
    """This worker's end of the relay: requests in from the others, answers back to them, and
    requests out to the owner of an admission. One non-blocking Unix datagram socket, read
    from the event loop (``add_reader``) and written directly, so that a worker that is not
    there shows as an error at once."""

    def __init__(self, directory: str, index: int, count: int, *, timeout_s: float = 5.0) -> None:
        if not 0 <= index < count <= MAX_WORKERS:
            raise ValueError(f"worker {index} of {count}")
        self.directory = directory
        self.index = index
        self.count = count
        self.timeout_s = timeout_s
        self.path = socket_path(directory, index)
        self._sock: socket.socket | None = None
        self._deliver: Deliver | None = None
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._next = 0
        self.relayed_out = 0  # requests this worker relayed to another
        self.relayed_in = 0  # requests relayed here
        self.unreachable = 0  # relays that found no worker (handled here instead)
        self.timeouts = 0  # relays unanswered within timeout_s

    def start(self, deliver: Deliver) -> None:
        """Listen for the other workers; ``deliver`` hands a relayed request to the front."""
        self._deliver = deliver
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.path)
            os.chmod(self.path, 0o600)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.cancel()
        self._waiting.clear()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def _readable(self) -> None:
        sock = self._sock
        for _ in range(256):  # then let the loop run; the reader is called again
            if sock is None:
                return
            try:
                data, origin = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("radius relay: %s", exc)
                return
            self._received(data, origin)

    def _received(self, data: bytes, origin: Any) -> None:
        kind = data[:1]
        try:
            if kind == _REQUEST:
                self._request(data, str(origin))
            elif kind == _ANSWER:
                _, correlation = _ANSWER_HEAD.unpack_from(data)
                waiting = self._waiting.pop(correlation, None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(data[_ANSWER_HEAD.size :])
        except (struct.error, UnicodeDecodeError) as exc:  # only our workers write here
            log.warning("radius relay: unreadable message from %s: %s", origin, exc)

    # --- in ------------------------------------------------------------------------------------

    def _request(self, data: bytes, origin: str) -> None:
        _, correlation, flags, port, host_length = _REQUEST_HEAD.unpack_from(data)
        start = _REQUEST_HEAD.size
        host = data[start : start + host_length].decode("ascii")
        packet = data[start + host_length :]
        if self._deliver is None or not origin:
            return
        self.relayed_in += 1
        kind = "acct" if flags & _ACCT else "auth"
        listener = RelayedListener(kind, bool(flags & _TLS), self, origin, correlation)
        self._deliver(listener, packet, (host, port), time.perf_counter())

    def answer(self, origin: str, correlation: int, data: bytes) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(_ANSWER_HEAD.pack(_ANSWER, correlation) + data, origin)
        except OSError as exc:  # the worker that asked is gone or full: the NAS retransmits
            log.debug("radius relay: answer to %s not sent: %s", origin, exc)

    # --- out -----------------------------------------------------------------------------------

    async def forward(
        self,
        target: int,
        packet: bytes,
        addr: tuple[str | int, ...],
        *,
        tls: bool,
        kind: str = "acct",
    ) -> bytes | None:
        """Relay ``packet`` (from client ``addr``) to worker ``target`` and return its answer.
        Raises ``ConnectionError`` when that worker cannot be reached (then handle it here);
        returns None when it did not answer in time."""
        if self._sock is None or not 0 <= target < self.count or target == self.index:
            raise ConnectionError(f"no relay to worker {target}")
        host = str(addr[0]).encode("ascii")
        self._next = (self._next + 1) & 0xFFFFFFFF
        correlation = self._next
        flags = (_TLS if tls else 0) | (_ACCT if kind == "acct" else 0)
        head = _REQUEST_HEAD.pack(_REQUEST, correlation, flags, int(addr[1]), len(host))
        waiting: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = waiting
        try:
            try:
                self._sock.sendto(head + host + packet, socket_path(self.directory, target))
            except OSError as exc:
                self.unreachable += 1
                raise ConnectionError(f"worker {target}: {exc}") from exc
            self.relayed_out += 1
            try:
                return await asyncio.wait_for(waiting, self.timeout_s)
            except TimeoutError:
                self.timeouts += 1
                return None
        finally:
            self._waiting.pop(correlation, None)
